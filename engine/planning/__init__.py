"""Planning: a story in, a shot list out (the LLM planner, the offline planner, language guessing)."""
