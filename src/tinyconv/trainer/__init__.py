"""Training: float loop, QAT (fusion), distillation (teachers, projectors)."""
