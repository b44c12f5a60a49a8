"""The record archive: every accepted batch, durable, answerable later."""
