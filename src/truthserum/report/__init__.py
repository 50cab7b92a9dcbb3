"""Reports: the printed tables and the plots of every task."""
