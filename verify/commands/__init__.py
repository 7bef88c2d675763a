"""The commands of `varguard`, one module each; verify/cli.py parses and dispatches."""
