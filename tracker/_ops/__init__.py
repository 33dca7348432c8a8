"""Operations on the canonical record that keep it right over months: archiving finished runs,
reaping runs whose process died silently, and the registry of declared tasks."""
