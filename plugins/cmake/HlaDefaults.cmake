# plugins/cmake/HlaDefaults.cmake: the settings every hla-deploy native build starts from.
# Included once, right after project(), by plugins/CMakeLists.txt and by plugins/trt_hla/CMakeLists.txt
# when trt_hla is built as a project of its own. (plugins/common keeps its own short preamble for
# its standalone build.)
#
# Sets:
#   C++17, position-independent code, CMAKE_BUILD_TYPE Release unless given.
#   CMAKE_CUDA_ARCHITECTURES  87 (Jetson Orin) and 90 (Hopper) unless given; set BEFORE the CUDA
#                             language is enabled, or CMake would pick the compiler's default.
#   HLA_WITH_CUDA             cache ON, OFF or AUTO (AUTO: ON when a CUDA compiler is found). After
#                             this file it is ON or OFF; with ON the CUDA language and CUDAToolkit
#                             (CUDA::cudart) are enabled.
# Defines:
#   hla_compile_warnings(<target>)   -O2 -Wall -Wextra (not MSVC)
#   hla_add_runner(<target> <source> RUNTIME <shared library> [INCLUDES <dir>...] [LIBRARIES <lib>...])
#       a C++ runner executable in <build>/bin linked against <shared library> (found at run time
#       through BUILD_RPATH, its directory), INCLUDES as system headers, -O2 -Wall -Wextra.
include_guard(GLOBAL)

set(CMAKE_CXX_STANDARD 17)
set(CMAKE_CXX_STANDARD_REQUIRED ON)
set(CMAKE_POSITION_INDEPENDENT_CODE ON)
if(NOT CMAKE_BUILD_TYPE)
  set(CMAKE_BUILD_TYPE Release)
endif()

# Jetson Orin (sm_87) and Hopper (sm_90) by default.
if(NOT DEFINED CMAKE_CUDA_ARCHITECTURES)
  set(CMAKE_CUDA_ARCHITECTURES 87 90)
endif()

set(HLA_WITH_CUDA AUTO CACHE STRING "Build the CUDA kernels: ON, OFF or AUTO (ON when nvcc is found)")
if(HLA_WITH_CUDA STREQUAL "AUTO")
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    set(HLA_WITH_CUDA ON)
  else()
    set(HLA_WITH_CUDA OFF)
  endif()
endif()
if(HLA_WITH_CUDA)
  enable_language(CUDA)
  find_package(CUDAToolkit REQUIRED)
endif()
message(STATUS "hla-deploy: CUDA kernels ${HLA_WITH_CUDA}")

function(hla_compile_warnings target)
  if(NOT MSVC)
    target_compile_options(${target} PRIVATE -O2 -Wall -Wextra)
  endif()
endfunction()

function(hla_add_runner target source)
  cmake_parse_arguments(ARG "" "RUNTIME" "INCLUDES;LIBRARIES" ${ARGN})
  add_executable(${target} ${source})
  target_include_directories(${target} SYSTEM PRIVATE ${ARG_INCLUDES})
  target_link_libraries(${target} PRIVATE "${ARG_RUNTIME}" ${ARG_LIBRARIES})
  get_filename_component(_runtime_dir "${ARG_RUNTIME}" DIRECTORY)
  set_target_properties(${target} PROPERTIES
    RUNTIME_OUTPUT_DIRECTORY "${CMAKE_BINARY_DIR}/bin"
    BUILD_RPATH "${_runtime_dir}")
  hla_compile_warnings(${target})
endfunction()
