"""One implementation per rule (issue 14): which trades belong in bars, which market a
capture trade is, the clock, the list of markets and kinds. Each rule lives in one place
and every user calls it; these tests pin the rule and that the callers agree."""
from __future__ import annotations

import ast
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quantlab import bars, binance, schema
from quantlab.binance import Trade
from quantlab.files import capture_market, capture_trade, iter_capture

TRADE_TYPES = (None, "MARKET", "INSURANCE_FUND", "ADL", "NA")
VALUES = (1.5, 0.0, -1.0, math.nan)


def test_market_print_rule_is_the_same_everywhere() -> None:
    from quantlab.store import _batch_from_trades  # the store's writer path

    cases = list(itertools.product(VALUES, VALUES, TRADE_TYPES))
    expected = [(tt is None or tt == "MARKET") and p > 0 and q > 0 for p, q, tt in cases]
    assert any(expected) and not all(expected)
    assert [schema.is_market_print(p, q, tt) for p, q, tt in cases] == expected
    price = np.array([c[0] for c in cases])
    qty = np.array([c[1] for c in cases])
    types = [c[2] for c in cases]
    assert schema.market_print_mask(price, qty, types).tolist() == expected
    assert schema.market_print_mask(price, qty, pd.Series(types, dtype=object)).tolist() == expected
    frame = pd.DataFrame({"price": price, "qty": qty, "trade_type": types})
    assert bars.market_mask(frame).tolist() == expected
    trades = [Trade(market="usdm", symbol="BTCUSDT", kind="trade", trade_id=i, time_ms=1, recv_ms=1,
                    price=p, qty=q, is_buyer_maker=False, trade_type=tt) for i, (p, q, tt) in enumerate(cases)]
    assert [t.is_market_print for t in trades] == expected
    assert _batch_from_trades(trades).market_print().tolist() == expected


def test_market_print_all_market_batch_takes_the_fast_path() -> None:
    ok = schema.market_print_mask(np.array([1.0, 2.0]), np.array([1.0, 0.0]), ["MARKET", None])
    assert ok.tolist() == [True, False]
    assert schema.market_print_mask(np.array([1.0]), np.array([1.0]), None).tolist() == [True]


def test_one_list_of_markets_kinds_and_one_clock() -> None:
    from quantlab import replay, store, synthetic

    assert schema.MARKETS == ("spot", "usdm") and schema.KINDS == ("trade", "aggTrade")
    from quantlab import archive, config

    assert binance.MARKETS is schema.MARKETS is config.MARKETS and binance.KINDS is schema.KINDS is config.KINDS
    assert archive._MARKETS is config.MARKETS
    assert synthetic.MARKETS is schema.MARKETS
    assert binance.now_ms is schema.now_ms
    from quantlab.ingest import ingester, rest, settings
    from quantlab.ui import pump
    from quantlab.ui.pipeline import core, spec

    for mod in (store, replay, settings, ingester, rest, archive, core, spec):
        assert mod._now_ms is schema.now_ms, mod.__name__
    assert pump.FeedStep(None, []).wall_ms is schema.now_ms
    before = schema.now_ms()
    assert abs(before - pd.Timestamp.now("UTC").value // 1_000_000) < 60_000


def test_capture_parser_shapes() -> None:
    spot = '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"M":true}}'
    usdm = '{"stream":"btcusdt@trade","data":{"e":"trade","s":"BTCUSDT","t":1,"X":"MARKET"}}'
    agg_usdm = '{"e":"aggTrade","s":"BTCUSDT","a":5,"f":1,"l":2}'
    agg_spot = '{"e":"aggTrade","s":"BTCUSDT","a":5,"f":1,"l":2,"M":true}'
    assert [capture_market(capture_trade(x)) for x in (spot, usdm, agg_usdm, agg_spot)] == \
        ["spot", "usdm", "usdm", "spot"]
    assert capture_trade(spot.encode()) == capture_trade(spot)
    for other in ('{"stream":"btcusdt@bookTicker","data":{"u":1,"s":"BTCUSDT"}}',
                  '{"lastUpdateId":1,"bids":[],"asks":[]}', "[1, 2]"):
        assert capture_trade(other) is None
    with pytest.raises(ValueError):
        capture_trade('{"stream":"btcusdt@trade","data":{"e":"tr')


@pytest.mark.parametrize("folder", ["ws-capture-2024-08-08", "ws-capture-2024-07-18"])
def test_capture_market_rule_on_the_real_captures(shared_data: Path, folder: str) -> None:
    """Every @trade of the real captures: the rule gives the market of the file name."""
    files = sorted((shared_data / folder).glob("*.gz"))
    assert files
    for path in files:
        named = path.name.split("_")[0]
        got = {capture_market(d) for _, raw in iter_capture(path) if '"e":"trade"' in raw
               for d in [capture_trade(raw)] if d is not None and d.get("e") == "trade"}
        assert got == {named}, path.name


def test_replay_and_files_agree_on_a_real_capture(shared_data: Path) -> None:
    from quantlab.files import load_capture_trades
    from quantlab.replay import load_capture_markets

    cap = shared_data / "ws-capture-2024-08-08"
    for name in ("spot_ethusdt_20240808.gz", "usdm_ethusdt_20240808.gz"):
        market = name.split("_")[0]
        by_market = load_capture_markets([cap / name])
        assert set(by_market) == {market}
        frame = load_capture_trades(cap / name)
        assert set(frame["market"]) == {market}
        ids = by_market[market][0].trade_id
        assert np.array_equal(np.sort(ids), np.sort(frame["trade_id"].to_numpy()))


def _package_nodes(but: str):
    """``("path:line", node)`` for every AST node of quantlab's modules except ``quantlab/<but>``."""
    root = Path(schema.__file__).parent
    for path in sorted(root.rglob("*.py")):
        if path == root / but:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            yield f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}", node


def test_every_error_class_lives_in_errors_py() -> None:
    """Exceptions live in quantlab/errors.py; other modules only re-export them."""
    from quantlab import errors
    from quantlab.ingest import policy

    names = {n for n, v in vars(errors).items() if isinstance(v, type) and issubclass(v, Exception)}
    assert {"RestError", "IngestStopTimeout"} <= names
    assert policy.RestError is errors.RestError and policy.IngestStopTimeout is errors.IngestStopTimeout
    outside = [f"{where} {node.name}" for where, node in _package_nodes(but="errors.py")
               if isinstance(node, ast.ClassDef)
               and {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases} & names]
    assert not outside, outside


def test_markets_are_spelled_once() -> None:
    """No literal ("spot", "usdm") list outside quantlab.config: code uses MARKETS."""
    from quantlab import cli, config

    literal = [where for where, node in _package_nodes(but="config.py")
               if isinstance(node, (ast.Tuple, ast.List, ast.Set))
               and {"spot", "usdm"} <= {e.value for e in node.elts if isinstance(e, ast.Constant)}]
    assert not literal, literal
    parser = cli.build_parser()
    choices = {name: [a.choices for a in sub._actions if "--market" in a.option_strings][0]
               for name, sub in parser._subparsers._group_actions[0].choices.items()
               if any("--market" in a.option_strings for a in sub._actions)}
    assert choices["replay"] == (*config.MARKETS, "both")
    assert choices["scan"] is config.MARKETS
