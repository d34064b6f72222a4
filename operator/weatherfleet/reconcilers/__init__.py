"""Pure reconcilers: desired children and status from CRs plus observations. No I/O."""
