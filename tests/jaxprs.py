"""Walking jaxprs in tests."""

import jax.extend


def dot_generals(jaxpr):
    """Every dot_general equation of a jaxpr, sub-jaxprs (map, checkpoint, scan) included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from dot_generals(sub)
