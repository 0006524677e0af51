"""The playground: server-rendered pages to list the programs, fill a program's form and run it."""
