"""The moderators' review service: the queue of detected listings, decisions on their topic,
confirms turned into seeds (``qexplorer review``)."""
