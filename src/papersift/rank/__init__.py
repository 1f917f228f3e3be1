"""Ranking signals beyond relevance: upvotes, page views and the trending score built on them."""
