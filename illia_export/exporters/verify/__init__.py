"""Export verification: same-noise parity (:mod:`.same_noise`) and the distribution check
against the source model's own sampling (:mod:`.distribution`)."""
