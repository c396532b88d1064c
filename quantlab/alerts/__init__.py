"""quantlab.alerts (rename only: the module moved into a package; the split follows)."""
from quantlab.alerts import engine as _m

globals().update({k: v for k, v in vars(_m).items() if not k.startswith("__")})
__all__ = _m.__all__
__doc__ = _m.__doc__
