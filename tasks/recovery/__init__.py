"""Recovery: strategies, their ladder, and the safe execution of actions."""
