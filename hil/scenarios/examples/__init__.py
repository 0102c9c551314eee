"""Shipped example scenarios (TOML files; a package so that they ship as package data)."""
