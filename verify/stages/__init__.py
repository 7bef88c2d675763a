"""The stages `varguard run` adds after the checks: what one is (base.py) and the registry of
them (registry.py). Kept empty so that importing base.py does not import every stage."""
