from line_manager.process import main

main()
