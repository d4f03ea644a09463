from omniret.cli.app import main

main()
