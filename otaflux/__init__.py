"""OtaFlux: the OTA server devices ask for firmware. Wire-compatible with the original OtaFlux
(etiennetremel/otaflux), rollout-aware, signature-checking, serving from an on-disk cache."""
