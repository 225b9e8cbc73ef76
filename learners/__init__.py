"""Pure numerical online learners and feature maps (no Kafka, Redis, files or sockets)."""
