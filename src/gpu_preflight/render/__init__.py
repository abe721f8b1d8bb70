"""Renderers: findings and estimates to text (terminal) or JSON. Nothing below this layer prints."""
