"""Operations surface: plain metric counters, the health verdict and the HTTP endpoint."""
