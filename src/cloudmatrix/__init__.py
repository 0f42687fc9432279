"""cloudmatrix: a digital twin of Huawei CloudMatrix384 / CloudMatrix-Infer and rival LLM-serving systems."""

__version__ = "0.1.0"
