"""Where task code executes: ``thread`` (default) and ``process``."""
