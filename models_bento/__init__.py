"""The BentoML scoring service (``bentoml serve models_bento.service:FraudScorer``)."""
