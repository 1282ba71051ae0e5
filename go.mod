module portico

go 1.26.8
