"""Recipes: tested examples of racing FastAPI, Flask and Django apps (docs/recipes.md)."""
