"""quantlab.synthetic (rename only: the module moved into a package; the split follows)."""
from quantlab.synthetic import market as _m

globals().update({k: v for k, v in vars(_m).items() if not k.startswith("__")})
__doc__ = _m.__doc__
