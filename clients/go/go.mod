module example.invalid/lars

go 1.19
