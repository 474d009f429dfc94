def bulk_process_events(*a, **k):  # placeholder, written next
    raise NotImplementedError
