"""L7 studies: paper reproduction, calibration, comparisons."""
