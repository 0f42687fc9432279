"""Unit constants. Names in the package carry their unit as a suffix (``_s``, ``_bytes``, ``_gb_s``)."""

GB_DECIMAL = 1e9  # catalog capacities and bandwidths are decimal (vendor convention)
TB_DECIMAL = 1e12
TERA = 1e12
PETA = 1e15

# Storage formats, bytes per value (block scales, at most 1/32 of a byte per value, are not counted). int4 is
# a weight format only (AWQ/GPTQ and Ascend's W4A8 store 4-bit integers; GEMMs compute in int8 or bf16);
# mxfp8 (OCP microscaling, a shared 8-bit exponent per 32 values) and hif8 (Huawei's HiFloat8) are 8-bit.
BYTES_PER_ELEMENT = {"fp4": 0.5, "fp8": 1.0, "int8": 1.0, "bf16": 2.0, "int4": 0.5, "mxfp8": 1.0, "hif8": 1.0}
WEIGHT_ONLY_FORMATS = frozenset({"int4"})  # stored, never computed in, cached or sent
