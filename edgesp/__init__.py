"""edgesp."""
