"""Sizes of a scan (decoding every file once to find the unreadable ones), apart so that the
command line and pages can read them without loading the store's libraries."""

SCAN_SIZE = 32  # px: scans (and the plain pipeline's check of every file) decode at this size
AUTO_SCAN_IMAGES = 5000  # scans (decode-once checks) up to this many images run without being asked
