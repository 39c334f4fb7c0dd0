"""The paper's comparison across every stage (`python -m reproduce`): an orchestrator over the stages' public
entry points, kept apart from them so that generate, train and evaluate never import one another."""
