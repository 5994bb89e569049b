"""Metrics (scikit-learn) and, later, robustness, efficiency and explanations."""
