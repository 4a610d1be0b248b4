"""What runs the work, not what the work is: supervised child processes, hardware and dtype
choices, thread limits, and provenance (content keys, digests, versions, git state)."""
