"""Training: one resumable loop (:mod:`.loop`) and the LineRWKV and gdn trainers on it."""
