"""Unit constants. Names in the package carry their unit as a suffix (``_s``, ``_bytes``, ``_gb_s``)."""

KB = 1024
MB = 1024**2
GB_DECIMAL = 1e9  # catalog capacities and bandwidths are decimal (vendor convention)
TB_DECIMAL = 1e12
TERA = 1e12
PETA = 1e15
US_PER_S = 1e6
MS_PER_S = 1e3


def gbit_to_bytes_per_s(gbit_per_s: float) -> float:
    """Network rates are quoted in Gb/s; the cost model works in bytes/s."""
    return gbit_per_s * 1e9 / 8
