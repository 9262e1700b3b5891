"""Topic contracts: versioned records, their codec and their exported JSON Schemas."""
