"""Unit constants. Names in the package carry their unit as a suffix (``_s``, ``_bytes``, ``_gb_s``)."""

GB_DECIMAL = 1e9  # catalog capacities and bandwidths are decimal (vendor convention)
TB_DECIMAL = 1e12
TERA = 1e12
PETA = 1e15
