"""Pure churn detectors: per-subscriber River models, risk, zones, reasons."""
