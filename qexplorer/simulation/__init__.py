"""Deployments simulated on a labelled marketplace: ``replay`` (the real system in an
isolated run, with a simulated moderator: ``qexplorer replay``) and ``curves`` (rounds of
exploration, review and retraining, in process: ``qexplorer curves``)."""
