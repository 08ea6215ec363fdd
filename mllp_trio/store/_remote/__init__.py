"""Batch files on remote servers: SFTP and FTPS pickup and drop."""
