"""Device side of the Lava target: the Lava process models that run the compiled network and learn on chip
(:mod:`firmware_sim.lava.processes`), the session that builds them from a build's files
(:mod:`firmware_sim.lava.network`), and their numpy reference (:mod:`firmware_sim.lava.reference`, the oracle the
fixed_pt run is bit-exact against). The compiler half (lowering, quantisation, core mapping, the rule's
arithmetic) stays in :mod:`compilers.lava`."""
