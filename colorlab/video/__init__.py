"""Video colorization: clips with exact flow, temporal-consistency metrics, flow estimation."""
