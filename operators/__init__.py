"""Small stream operators, each testable without a broker."""
