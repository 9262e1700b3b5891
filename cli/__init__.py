"""The qexplorer command line."""
