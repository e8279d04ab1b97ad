"""HTTP surface: parses requests, calls services, maps domain errors and results to responses."""
