"""Attacker tests: one per hole found by probing the server as an attacker would."""
