"""Unit constants. Names in the package carry their unit as a suffix (``_s``, ``_bytes``, ``_gb_s``)."""

GB_DECIMAL = 1e9  # catalog capacities and bandwidths are decimal (vendor convention)
TB_DECIMAL = 1e12
TERA = 1e12
PETA = 1e15

BYTES_PER_ELEMENT = {"fp4": 0.5, "fp8": 1.0, "int8": 1.0, "bf16": 2.0}  # storage formats, bytes per value
