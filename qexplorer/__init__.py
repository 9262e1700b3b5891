"""QExplorer's own namespace: every package that is not one of the design card's top-level
folders (``schemas``, ``agents``, ``streams``, ``trainer``) lives here, so the installed
distribution adds no top-level name that another distribution could also install.

Nothing is imported here: each subpackage is a layer of its own (see the README's layout).
"""
