"""The service's HTTP routes, one router per concern: ``ops`` (health, readiness, metrics),
``contexts`` (what a tenant can ask about) and ``answer`` (POST /v1/answer)."""
