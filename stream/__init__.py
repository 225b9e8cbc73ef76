"""Everything in ocld that touches the outside world, and the runtime that drives the learners."""
