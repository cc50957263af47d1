from dal.cli import main

main()
