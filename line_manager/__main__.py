from privgrid.roles.line_manager.process import main

main()
